#!/usr/bin/env bash
# Make Debian's headless Chromium (and its chromedriver) available for the dashboard's browser
# tests, installing them with apt-get when /usr/bin/chromium is missing. Nothing is downloaded
# by a browser tool itself: Playwright drives this system Chromium.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ -z "${STEM_APT_UPDATED:-}" ]; then
  apt-get update -qq
  export STEM_APT_UPDATED=1
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  chromium chromium-driver fonts-dejavu-core >/dev/null

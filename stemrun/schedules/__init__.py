"""Schedules and beat: specs and next fire times (`spec`), the schedule store contract and its
backends (`store`, `memory`, `sqlite`, `redis`, `postgres`), applying stem.yaml's desired state
(`apply`) and the beat loop (`beat`). Import the submodules; this package imports nothing so
that loading one of them stays cheap.
"""

"""Side-by-side benchmark of stemrun and its peers on one Redis; see benchmarks/redis_compare.py."""

"""One module per system measured by benchmarks/compare.py; ``base`` holds what they share."""

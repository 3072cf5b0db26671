"""Benchmarks of the recommendation pipeline at RetailRocket scale (issue 4): data generator, pipeline runs."""

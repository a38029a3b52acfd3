"""Load scripts (k6) and the benchmark that compares the text service with a naive baseline."""

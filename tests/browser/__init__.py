"""Real-browser tests: what a patron sees and does."""

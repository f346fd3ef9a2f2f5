"""mlma: the Machine Learning Monitoring Agent."""

__version__ = "0.1.0"

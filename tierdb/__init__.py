"""TierDB: a tiered vector storage engine with S3 as the source of truth."""

__version__ = "0.1.0"

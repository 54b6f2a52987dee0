"""InSAR Pipeline: parallel, resumable Sentinel-1 interferogram batches with ISCE2 topsApp."""

__version__ = "0.1.0"

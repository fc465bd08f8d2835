"""igm: train and study multimodal classifiers with IGM (Jiang, Chi, Yang, IJCAI 2025)."""

__version__ = "0.1.0"

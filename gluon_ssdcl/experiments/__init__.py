"""Experiments beside the detector: the center loss on plain classification (LeNet++ on MNIST)."""

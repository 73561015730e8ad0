"""Choosing what to transfer before training: transferability scores of frozen features (`scores`) and the
ranking of candidate backbones and layers for a data set (`rank`)."""

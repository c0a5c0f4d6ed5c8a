"""Segmentation backends. Each returns a LabelMap on the input volume's grid."""

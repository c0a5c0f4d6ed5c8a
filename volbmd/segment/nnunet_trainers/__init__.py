"""nnU-Net trainer subclasses shipped with volbmd (found by nnU-Net through nnUNet_extTrainer)."""

"""Deep-learning models (MONAI / torch): imported only by the backends and tools that use them."""

"""OmniLocalRF: Omnidirectional Local Radiance Fields from Dynamic Videos (CVPR 2024)."""

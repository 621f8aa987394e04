"""vid-TLDR (Choi et al., CVPR 2024): training-free token merging for video transformers."""

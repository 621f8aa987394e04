"""LTM: Lightweight Textured Mesh Extraction and Refinement of Large Unbounded Scenes (CVPR 2024)."""

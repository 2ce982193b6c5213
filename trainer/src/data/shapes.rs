//! Synthetic segmentation images (filled in with the segmentation experiment).

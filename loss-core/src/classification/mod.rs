//! Classification losses.

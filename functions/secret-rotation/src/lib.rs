//! secret-rotation (skeleton: see the issue that builds it).

//! The `bauxite` edge binary.

fn main() {}

//! Shared test fixtures.
#![allow(dead_code)]

pub(crate) mod drive;
pub(crate) mod link;

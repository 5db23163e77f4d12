//! The modules of the `herald` binary (`main.rs`, the command line), as a
//! library so the fuzz targets in `fuzz/` can reach the config loader. Not a
//! stable API.

pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod gitcheck;
pub mod keyring;
pub mod profile;
pub mod token;

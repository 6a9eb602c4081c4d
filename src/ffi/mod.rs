//! The C ABI: the only `#[no_mangle]` code in the crate.
//!
//! This layer converts raw pointers (through the helpers in [`guard`]), checks
//! arguments, maps `Errno` to `-errno` and keeps panics from unwinding into C.
//! No loop logic lives here.
//!
//! Every exported function documents, in labelled lines carried into the
//! header: what it does, Returns, Errors, Ownership, Thread safety. Those lines
//! are the C caller's safety contract, so `clippy::missing_safety_doc` (which
//! wants a Rust `# Safety` heading) is allowed for this module.
#![allow(clippy::missing_safety_doc)]
#![allow(non_camel_case_types)]

pub mod conn;
pub mod echo;
pub mod error;
pub mod event_loop;
pub(crate) mod guard;
pub(crate) mod handle;
pub mod listener;
pub mod post;
pub mod signal;
pub mod version;

pub use conn::*;
pub use echo::*;
pub use error::*;
pub use event_loop::*;
pub use listener::*;
pub use post::*;
pub use signal::*;
pub use version::*;

//! The requester side (placeholder module body is replaced below).

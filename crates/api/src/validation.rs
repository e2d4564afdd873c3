//! stub (validation): being written.

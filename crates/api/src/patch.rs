//! stub (patch): being written.

//! stub (table): being written.

//! The userspace L4 proxy behind `--proxy-mode userspace`: one listener per frontend
//! (address, protocol, port), forwarding TCP and UDP to the frontend's backends.

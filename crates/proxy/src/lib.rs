//! The Service data plane: a pure compiler from the watched Services, EndpointSlices and
//! Node to a service table, and the back ends that make the table live — nftables (one
//! table of pier's own, programmed incrementally) or the userspace L4 proxy.

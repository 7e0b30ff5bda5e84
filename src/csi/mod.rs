//! The gRPC face: CSI Identity and Node services.

//! What one volume may ask of the node's one driver, which every namespace on the node shares:
//! each bound is a flag, and a volume over one is refused naming the limit and the flag, so a
//! pod author learns what to change and a cluster operator what to raise.

/// The bounds on one volume and on one source object's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of a volume's attributes (keys and values, the kubelet's own keys excluded).
    pub attribute_bytes: usize,
    /// Sources one volume names (objects and signer selections, every kind together).
    pub sources: usize,
    /// Certificates one volume's bundle holds (system roots included).
    pub volume_certificates: usize,
    /// Bytes of one value of a cluster object (a ConfigMap or Secret key, a
    /// ClusterTrustBundle), checked before anything is parsed.
    pub source_bytes: usize,
    /// Certificates in one such value: PEM blocks counted before parsing, and the parsed count
    /// (a PKCS#7 bundle hides its count until parsed).
    pub source_certificates: usize,
    /// Single-object watches (ConfigMaps) of one namespace's volumes on this node, the
    /// driver's own namespace aside: each is a stream to the API server and a cache entry.
    pub namespace_watches: usize,
    /// Distinct volume specs the pods of one namespace use on this node: each is a directory
    /// of links and dentries the kernel charges, which `--store-size` does not bound.
    pub namespace_specs: usize,
    /// Store bytes (whole tmpfs pages) of those specs together, each counted as if it were
    /// alone: the content the namespace may ask the node to hold.
    pub namespace_store_bytes: u64,
    /// Files, links and directories of those specs together: dentries and inodes the kernel
    /// allocates beside the tmpfs's pages.
    pub namespace_store_files: u64,
    /// Percent of the store that new specs may not fill, kept for the next generation of the
    /// published ones: a rotation never fails for lack of room.
    pub store_rotation_reserve_percent: u8,
}

pub const ATTRIBUTE_BYTES_FLAG: &str = "--max-volume-attribute-bytes";
pub const SOURCES_FLAG: &str = "--max-volume-sources";
pub const VOLUME_CERTIFICATES_FLAG: &str = "--max-volume-certificates";
pub const SOURCE_BYTES_FLAG: &str = "--max-source-object-bytes";
pub const SOURCE_CERTIFICATES_FLAG: &str = "--max-source-certificates";
pub const NAMESPACE_WATCHES_FLAG: &str = "--max-namespace-watches";
pub const NAMESPACE_SPECS_FLAG: &str = "--max-namespace-specs";
pub const NAMESPACE_STORE_BYTES_FLAG: &str = "--max-namespace-store-bytes";
pub const NAMESPACE_STORE_FILES_FLAG: &str = "--max-namespace-store-files";
pub const STORE_ROTATION_RESERVE_FLAG: &str = "--store-rotation-reserve";

impl Default for Limits {
    /// Generous for real use: the public roots are ~150 certificates in ~220 KB of PEM, an
    /// organisation's CAs far fewer, and a volume names a handful of sources.
    fn default() -> Self {
        Self {
            attribute_bytes: 16 * 1024,
            sources: 64,
            volume_certificates: 2000,
            source_bytes: 512 * 1024,
            source_certificates: 500,
            // Four volumes at the per-volume maximum of sources, all distinct.
            namespace_watches: 256,
            // Pods of a namespace mostly share a few specs (one per distinct set of attributes).
            namespace_specs: 32,
            // A spec of the public roots takes about 1 MiB and 600 entries; one at the
            // per-volume certificate maximum about 10 MiB. A quarter of the default store's
            // half that new specs may fill.
            namespace_store_bytes: 32 << 20,
            // About 7 MiB of kernel memory.
            namespace_store_files: 32 * 1024,
            store_rotation_reserve_percent: 50,
        }
    }
}

//! The kinds of certificate source that rotation, publish, health and the metrics labels speak:
//! the local ones, and each cluster source kind by its tag.

/// Where a change came from: the kind of source, never which object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// A cluster source kind, by its tag (`configmap`): the kind's own name, never an object's.
    Cluster(&'static str),
    /// An `--extra-pem` file.
    File,
    /// The `--system-roots` file.
    System,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cluster(tag) => tag,
            Self::File => "file",
            Self::System => "system",
        }
    }
}

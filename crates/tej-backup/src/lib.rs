//! tej-backup (being built).

pub mod storage;

pub use storage::{
    ByteStream, ObjectKey, ObjectMeta, ObjectStore, PutOptions, PutResult, StorageError,
};

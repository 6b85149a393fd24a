//! being written.
#[derive(Debug)]
pub struct MemoryStore;

//! Tests of the Deployment Listener: the decision function rule by rule (`decision`), its
//! properties over random views (`properties`), and the whole listener over a scripted fake
//! runtime on both backends, MemoryStore + SQLite and Redis + MariaDB, and its loop (`live`);
//! over the real `local` runtime (`local`).

mod decision;
mod live;
mod local;
mod properties;
mod support;

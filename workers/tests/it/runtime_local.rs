//! Tests of the runtime_local part (see workers/src/).

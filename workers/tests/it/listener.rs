//! Tests of the listener part (see workers/src/).

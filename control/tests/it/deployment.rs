//! Tests of the deployment part (see control/src/).

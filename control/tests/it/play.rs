//! Tests of the play part (see control/src/).

//! What each command does once its options are parsed ([`crate::cli`]):
//! [`serve`] runs a cluster, [`control`] talks to running ones, [`unit`]
//! writes their systemd units, [`manual`] documents them all.

pub(crate) mod control;
pub(crate) mod manual;
pub(crate) mod serve;
pub(crate) mod unit;

//! What each command does once its options are parsed ([`crate::cli`]):
//! [`serve`] runs a cluster, [`control`] talks to running ones and [`monit`]
//! watches them live, [`logs`] reads their journal, [`unit`] writes their
//! systemd units and [`import`] those of a PM2 ecosystem file, [`manual`]
//! documents them all.

pub(crate) mod control;
pub(crate) mod import;
mod local_time;
pub(crate) mod logs;
pub(crate) mod manual;
pub(crate) mod monit;
pub(crate) mod serve;
pub(crate) mod unit;

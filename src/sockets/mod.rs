//! Listening sockets: passed by systemd ([`activation`]) or bound from
//! `--listen` ([`listener`]); after this point both are the same
//! [`listener::Listener`].

pub(crate) mod activation;
pub(crate) mod listener;

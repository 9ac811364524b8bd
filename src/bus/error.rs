//! The errors a D-Bus caller gets: `io.sockherd.Error.<name>` with a human
//! message, one per way a request can fail.

use crate::pool::report::RequestError;

/// A D-Bus error reply: `io.sockherd.Error.<variant>` with a human message.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "io.sockherd.Error", impl_display = true)]
pub(crate) enum Error {
    /// A failure of D-Bus itself (only ever seen by clients).
    #[zbus(error)]
    ZBus(zbus::Error),
    /// The arguments were refused; nothing changed.
    InvalidArgs(String),
    /// Something else is under way (a reload); try again after it.
    Busy(String),
    /// The caller may not do this.
    AccessDenied(String),
    /// It was tried and did not work.
    Failed(String),
}

impl From<RequestError> for Error {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::InvalidArgs(m) => Error::InvalidArgs(m),
            RequestError::Busy(m) => Error::Busy(m),
            RequestError::Failed(m) => Error::Failed(m),
        }
    }
}

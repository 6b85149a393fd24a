//! The roles that are not built yet: they say so and exit 69, never pretending to run.

use crate::cli::RoleArgs;
use crate::outcome::Exit;

/// Tells the user that `fctf <role>` does not exist yet and which issue builds it.
pub fn not_built(role: &str, issue: u32, args: &RoleArgs) -> Exit {
    let config = match &args.config {
        Some(path) => format!(" ({} was not read)", path.display()),
        None => String::new(),
    };
    eprintln!("`fctf {role}` is not built yet (see issue {issue}); nothing was started{config}");
    Exit::Unavailable
}

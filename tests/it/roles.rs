//! Roles that are not built yet say so and exit 69, with or without a config file.

use super::{assert_exit, run, stderr};

#[test]
fn unbuilt_roles_say_so_and_exit_69() {
    for (role, issue) in [
        ("up", 6),
        ("gateway", 3),
        ("contestant", 4),
        ("deployment-center", 5),
        ("consumer", 5),
        ("listener", 5),
        ("migrate", 4),
    ] {
        let output = run(&[role]);
        assert_exit(&output, 69);
        let message = stderr(&output);
        assert!(
            message.starts_with(&format!(
                "`fctf {role}` is not built yet (see issue {issue})"
            )),
            "{message}"
        );
        assert!(output.stdout.is_empty());

        let output = run(&[role, "-c", "fctf.toml"]);
        assert_exit(&output, 69);
        assert!(stderr(&output).contains("fctf.toml was not read"));
        let output = run(&[role, "--config", "fctf.toml"]);
        assert_exit(&output, 69);
    }
}

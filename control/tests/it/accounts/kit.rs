//! The test kit itself: `testkit::app` builds a working service on a fresh database, `player`
//! joins or founds teams, tokens authenticate, `admin` is an admin.

use axum::body::Body;
use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::{Request, StatusCode};
use fctf_control::contestant::accounts::{Caller, testkit};
use tower::ServiceExt;

#[tokio::test]
async fn app_players_and_admins_work_over_sqlite() {
    let (state, app) = testkit::app(None).await;
    let captain = testkit::player(&state, "kit-captain", Some("kit team")).await;
    let mate = testkit::player(&state, "kit-mate", Some("kit team")).await;
    let solo = testkit::player(&state, "kit-solo", None).await;
    let admin = testkit::admin(&state).await;
    assert_eq!(captain.team_id, mate.team_id);
    assert!(captain.team_id.is_some() && solo.team_id.is_none());
    for (player, captain_flag, admin_flag) in [
        (&captain, true, false),
        (&mate, false, false),
        (&admin, false, true),
    ] {
        let request = Request::get("/api/v1/users/me")
            .header("authorization", player.authorization())
            .body(Body::empty())
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        // The extractor's view of the same credentials.
        let (mut parts, ()) = Request::get("/")
            .header("authorization", player.authorization())
            .body(())
            .unwrap()
            .into_parts();
        let caller = <Caller as FromRequestParts<_>>::from_request_parts(&mut parts, &state)
            .await
            .unwrap();
        assert_eq!(caller.user_id, player.user_id);
        assert_eq!(caller.team_id, player.team_id);
        assert_eq!(
            (caller.is_captain, caller.is_admin),
            (captain_flag, admin_flag)
        );
    }
    let (mut parts, ()) = Request::get("/").body(()).unwrap().into_parts();
    let anonymous =
        <Caller as OptionalFromRequestParts<_>>::from_request_parts(&mut parts, &state).await;
    assert!(anonymous.unwrap().is_none());
    let settings = state.accounts.contest().await;
    assert!(settings.captain_only_start);
    assert!(!settings.captain_only_submit);
}

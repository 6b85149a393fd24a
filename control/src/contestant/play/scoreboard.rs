//! The scoreboard, computed as one pure function of the rows in a view (every row, or only those
//! before the freeze), so the live and the frozen boards are the same computation with another
//! cut-off.
//!
//! Rules: a solve is worth its challenge's value in the view (dynamic values decay with the
//! solves in the view), plus the first-blood bonus for the first solver by the database-stamped
//! solve order (the solve id); awards add (hint unlocks are negative awards). Ranking: score,
//! then the earlier last solve (by solve id), then the team id. Hidden or banned teams are
//! left out of the board and their solves do not count.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::scoring::{Valuation, solve_points};

/// A team as the board shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TeamRow {
    pub id: i64,
    pub name: String,
    pub bracket_id: Option<i64>,
    pub bracket_name: Option<String>,
}

/// A member of a team on the board.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberRow {
    pub id: i64,
    pub team_id: i64,
    pub name: String,
}

/// A challenge's scoring rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChallengeRule {
    pub id: i64,
    pub valuation: Valuation,
    pub first_blood_bonus: i64,
}

/// One solve row; `id` is the database-stamped order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SolveRow {
    pub id: i64,
    pub challenge_id: i64,
    pub team_id: i64,
    pub user_id: i64,
    pub created_ms: i64,
}

/// One award row (negative for hint unlocks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AwardRow {
    pub id: i64,
    pub team_id: i64,
    pub user_id: Option<i64>,
    pub value: i64,
    pub created_ms: i64,
}

/// Everything the board is computed from.
#[derive(Clone, Debug, Default)]
pub struct BoardInput {
    pub teams: Vec<TeamRow>,
    pub members: Vec<MemberRow>,
    pub challenges: Vec<ChallengeRule>,
    pub solves: Vec<SolveRow>,
    pub awards: Vec<AwardRow>,
}

/// A solve as scored on the board (CTFd's `top/{n}` solve entry).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ScoredSolve {
    pub challenge_id: i64,
    pub account_id: i64,
    pub team_id: i64,
    pub user_id: i64,
    pub value: i64,
    /// Unix milliseconds.
    #[serde(skip)]
    pub date_ms: i64,
    /// The solve id (database order).
    #[serde(skip)]
    pub solve_id: i64,
}

/// A member's score.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberScore {
    pub id: i64,
    pub name: String,
    pub score: i64,
}

/// One line of the board.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Standing {
    pub pos: usize,
    pub team_id: i64,
    pub name: String,
    pub score: i64,
    pub bracket_id: Option<i64>,
    pub bracket_name: Option<String>,
    pub members: Vec<MemberScore>,
    /// The team's scored solves, oldest first.
    pub solves: Vec<ScoredSolve>,
    /// The id of the team's last solve (the tie-breaker).
    pub last_solve_id: Option<i64>,
}

/// A computed board and the per-challenge figures of the same view.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Board {
    pub standings: Vec<Standing>,
    /// Solves per challenge in the view (by counted teams).
    pub solve_counts: HashMap<i64, u64>,
    /// Each challenge's value in the view.
    pub values: HashMap<i64, i64>,
    /// The first solver of each challenge in the view.
    pub first_blood: HashMap<i64, i64>,
}

impl Board {
    /// The line of `team`, if on the board.
    pub fn standing(&self, team: i64) -> Option<&Standing> {
        self.standings.iter().find(|s| s.team_id == team)
    }

    /// The board of one bracket, positions renumbered.
    pub fn bracket(&self, bracket: i64) -> Vec<Standing> {
        self.standings
            .iter()
            .filter(|s| s.bracket_id == Some(bracket))
            .cloned()
            .enumerate()
            .map(|(i, mut s)| {
                s.pos = i + 1;
                s
            })
            .collect()
    }
}

/// Adds `points` to a score, saturating: values are bounded where they are written, but a
/// board must never panic or wrap on what the database holds.
fn add(score: &mut i64, points: i64) {
    *score = score.saturating_add(points);
}

/// Computes the board over the rows created before `cutoff_ms` (all rows when `None`).
pub fn compute(input: &BoardInput, cutoff_ms: Option<i64>) -> Board {
    let in_view = |created: i64| cutoff_ms.is_none_or(|cut| created < cut);
    let counted: HashMap<i64, &TeamRow> = input.teams.iter().map(|t| (t.id, t)).collect();
    let mut solves: Vec<&SolveRow> = input
        .solves
        .iter()
        .filter(|s| in_view(s.created_ms) && counted.contains_key(&s.team_id))
        .collect();
    solves.sort_by_key(|s| s.id);

    let mut solve_counts: HashMap<i64, u64> = HashMap::new();
    let mut first_blood: HashMap<i64, i64> = HashMap::new();
    for s in &solves {
        *solve_counts.entry(s.challenge_id).or_default() += 1;
        first_blood.entry(s.challenge_id).or_insert(s.team_id);
    }
    let rules: HashMap<i64, &ChallengeRule> = input.challenges.iter().map(|c| (c.id, c)).collect();
    let values: HashMap<i64, i64> = input
        .challenges
        .iter()
        .map(|c| {
            let n = solve_counts.get(&c.id).copied().unwrap_or(0);
            (c.id, c.valuation.value(n))
        })
        .collect();

    let mut score: HashMap<i64, i64> = HashMap::new();
    let mut member_score: HashMap<i64, i64> = HashMap::new();
    let mut team_solves: HashMap<i64, Vec<ScoredSolve>> = HashMap::new();
    let mut last_solve: HashMap<i64, i64> = HashMap::new();
    for s in &solves {
        let Some(rule) = rules.get(&s.challenge_id) else {
            continue;
        };
        let first = first_blood.get(&s.challenge_id) == Some(&s.team_id);
        let points = solve_points(
            values.get(&s.challenge_id).copied().unwrap_or(0),
            first,
            rule.first_blood_bonus,
        );
        add(score.entry(s.team_id).or_default(), points);
        add(member_score.entry(s.user_id).or_default(), points);
        last_solve.insert(s.team_id, s.id);
        team_solves.entry(s.team_id).or_default().push(ScoredSolve {
            challenge_id: s.challenge_id,
            account_id: s.team_id,
            team_id: s.team_id,
            user_id: s.user_id,
            value: points,
            date_ms: s.created_ms,
            solve_id: s.id,
        });
    }
    for a in input
        .awards
        .iter()
        .filter(|a| in_view(a.created_ms) && counted.contains_key(&a.team_id))
    {
        add(score.entry(a.team_id).or_default(), a.value);
        if let Some(user) = a.user_id {
            add(member_score.entry(user).or_default(), a.value);
        }
    }

    let mut members: BTreeMap<i64, Vec<MemberScore>> = BTreeMap::new();
    for m in &input.members {
        members.entry(m.team_id).or_default().push(MemberScore {
            id: m.id,
            name: m.name.clone(),
            score: member_score.get(&m.id).copied().unwrap_or(0),
        });
    }

    let mut standings: Vec<Standing> = input
        .teams
        .iter()
        .map(|t| Standing {
            pos: 0,
            team_id: t.id,
            name: t.name.clone(),
            score: score.get(&t.id).copied().unwrap_or(0),
            bracket_id: t.bracket_id,
            bracket_name: t.bracket_name.clone(),
            members: members.remove(&t.id).unwrap_or_default(),
            solves: team_solves.remove(&t.id).unwrap_or_default(),
            last_solve_id: last_solve.get(&t.id).copied(),
        })
        .collect();
    standings.sort_by(|a, b| {
        b.score
            .cmp(&a.score)
            .then_with(|| match (a.last_solve_id, b.last_solve_id) {
                (Some(x), Some(y)) => x.cmp(&y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            })
            .then_with(|| a.team_id.cmp(&b.team_id))
    });
    for (i, s) in standings.iter_mut().enumerate() {
        s.pos = i + 1;
    }
    Board {
        standings,
        solve_counts,
        values,
        first_blood,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::scoring::DecayFunction;
    use super::*;

    fn team(id: i64, bracket: Option<i64>) -> TeamRow {
        TeamRow {
            id,
            name: format!("t{id}"),
            bracket_id: bracket,
            bracket_name: bracket.map(|b| format!("b{b}")),
        }
    }

    fn solve(id: i64, challenge_id: i64, team_id: i64, created_ms: i64) -> SolveRow {
        SolveRow {
            id,
            challenge_id,
            team_id,
            user_id: team_id * 100,
            created_ms,
        }
    }

    fn input() -> BoardInput {
        BoardInput {
            teams: vec![team(1, Some(1)), team(2, Some(2)), team(3, Some(1))],
            members: vec![MemberRow {
                id: 100,
                team_id: 1,
                name: "alice".into(),
            }],
            challenges: vec![
                ChallengeRule {
                    id: 10,
                    valuation: Valuation::Static(100),
                    first_blood_bonus: 10,
                },
                ChallengeRule {
                    id: 20,
                    valuation: Valuation::Dynamic {
                        initial: 500,
                        minimum: 100,
                        decay: 100,
                        function: DecayFunction::Linear,
                    },
                    first_blood_bonus: 0,
                },
            ],
            solves: vec![],
            awards: vec![],
        }
    }

    #[test]
    fn scores_saturate_instead_of_overflowing() {
        let mut i = input();
        let award = |id, value| AwardRow {
            id,
            team_id: 1,
            user_id: Some(100),
            value,
            created_ms: 1,
        };
        i.awards = vec![award(1, i64::MAX), award(2, i64::MAX), award(3, 5)];
        let board = compute(&i, None);
        assert_eq!(board.standings[0].team_id, 1);
        assert_eq!(board.standings[0].score, i64::MAX);
    }

    #[test]
    fn ties_break_on_the_earlier_last_solve_by_database_order() {
        let mut i = input();
        // Team 2 solved first by id although its clock time is later.
        i.solves = vec![
            solve(5, 10, 2, 2000),
            solve(6, 10, 1, 1000),
            solve(7, 10, 3, 3000),
        ];
        i.challenges[0].first_blood_bonus = 0;
        let board = compute(&i, None);
        let order: Vec<i64> = board.standings.iter().map(|s| s.team_id).collect();
        assert_eq!(order, vec![2, 1, 3]);
        assert_eq!(board.first_blood[&10], 2);
        assert_eq!(board.standings[0].pos, 1);
    }

    #[test]
    fn dynamic_values_decay_for_every_solver_and_first_blood_adds_once() {
        let mut i = input();
        i.solves = vec![
            solve(1, 20, 1, 10),
            solve(2, 20, 2, 20),
            solve(3, 10, 2, 30),
        ];
        i.awards = vec![AwardRow {
            id: 1,
            team_id: 1,
            user_id: Some(100),
            value: -25,
            created_ms: 40,
        }];
        let board = compute(&i, None);
        assert_eq!(board.values[&20], 400);
        assert_eq!(board.standing(1).map(|s| s.score), Some(375));
        assert_eq!(board.standing(2).map(|s| s.score), Some(400 + 110));
        assert_eq!(board.standing(1).map(|s| s.members[0].score), Some(375));
        assert_eq!(board.standing(3).map(|s| s.score), Some(0));
    }

    #[test]
    fn the_freeze_cuts_scores_counts_and_decay() {
        let mut i = input();
        i.solves = vec![solve(1, 20, 1, 10), solve(2, 20, 2, 200)];
        let frozen = compute(&i, Some(100));
        assert_eq!(frozen.values[&20], 500);
        assert_eq!(frozen.solve_counts.get(&20), Some(&1));
        assert_eq!(frozen.standing(2).map(|s| s.score), Some(0));
        let live = compute(&i, None);
        assert_eq!(live.values[&20], 400);
        assert_eq!(live.standing(2).map(|s| s.score), Some(400));
    }

    #[test]
    fn brackets_renumber_and_uncounted_teams_are_left_out() {
        let mut i = input();
        i.solves = vec![solve(1, 10, 3, 10), solve(2, 10, 9, 5)];
        let board = compute(&i, None);
        assert!(board.standing(9).is_none());
        assert_eq!(board.first_blood[&10], 3);
        let b1 = board.bracket(1);
        assert_eq!(
            b1.iter().map(|s| (s.team_id, s.pos)).collect::<Vec<_>>(),
            vec![(3, 1), (1, 2)]
        );
    }

    proptest! {
        #[test]
        fn scores_sum_what_was_solved_and_positions_are_a_permutation(
            picks in proptest::collection::vec((0usize..2, 1i64..4, 0i64..1000), 0..30)
        ) {
            let mut i = input();
            let mut seen = std::collections::HashSet::new();
            for (n, (c, t, ms)) in picks.into_iter().enumerate() {
                let c = [10, 20][c];
                if seen.insert((c, t)) {
                    i.solves.push(solve(n as i64 + 1, c, t, ms));
                }
            }
            let board = compute(&i, None);
            let mut pos: Vec<usize> = board.standings.iter().map(|s| s.pos).collect();
            pos.sort_unstable();
            prop_assert_eq!(pos, vec![1, 2, 3]);
            for w in board.standings.windows(2) {
                prop_assert!(w[0].score >= w[1].score);
            }
            let total: i64 = board.standings.iter().map(|s| s.score).sum();
            let bloods: i64 = board.first_blood.keys().map(|c| if *c == 10 { 10 } else { 0 }).sum();
            let expect: i64 = i.solves.iter().map(|s| board.values[&s.challenge_id]).sum::<i64>() + bloods;
            prop_assert_eq!(total, expect);
        }
    }
}

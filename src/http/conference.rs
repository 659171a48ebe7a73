//! The conference admin API (loopback admin listener): list the open
//! conference rooms and their participants, mute/deafen one, remove one
//! (its call is hung up). See docs/media.md, "Conference admin API".

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::AppState;
use crate::media::engine::{Command, ParticipantView, RoomHandle};
use crate::media::room::ParticipantId;

/// One conference as the API shows it.
#[derive(Debug, Serialize)]
struct Conference {
    name: String,
    participants: Vec<Participant>,
}

/// One participant as the API shows it.
#[derive(Debug, Serialize)]
struct Participant {
    id: u64,
    label: String,
    codec: &'static str,
    muted: bool,
    deaf: bool,
    held: bool,
    talking: bool,
}

impl From<ParticipantView> for Participant {
    fn from(v: ParticipantView) -> Self {
        Participant {
            id: v.info.id.0,
            label: v.label,
            codec: v.info.codec,
            muted: v.info.muted,
            deaf: v.info.deaf,
            held: v.info.held,
            talking: v.info.talking,
        }
    }
}

/// What `PATCH .../participants/{id}` may change.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Change {
    muted: Option<bool>,
    deaf: Option<bool>,
}

fn not_found(what: &str) -> Response {
    (StatusCode::NOT_FOUND, format!("no such {what}\n")).into_response()
}

async fn conference(handle: &RoomHandle, name: String) -> Option<Conference> {
    let participants = handle.participants().await.ok()?;
    Some(Conference {
        name,
        participants: participants.into_iter().map(Participant::from).collect(),
    })
}

/// `GET /api/conferences`: every open conference with its participants.
pub(super) async fn list(State(state): State<AppState>) -> Response {
    let Some(engine) = state.engine else {
        return Json(Vec::<()>::new()).into_response();
    };
    let mut names = engine.room_names();
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        if let Some(handle) = engine.conference(&name)
            && let Some(c) = conference(&handle, name).await
        {
            out.push(c);
        }
    }
    Json(out).into_response()
}

/// `GET /api/conferences/{name}`: one conference.
pub(super) async fn show(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    let Some(handle) = state.engine.and_then(|e| e.conference(&name)) else {
        return not_found("conference");
    };
    match conference(&handle, name).await {
        Some(c) => Json(c).into_response(),
        None => not_found("conference"),
    }
}

/// The room and the participant a path names, if both exist.
async fn find(
    state: &AppState,
    name: &str,
    id: u64,
) -> Result<(RoomHandle, ParticipantView), Response> {
    let handle = state
        .engine
        .as_ref()
        .and_then(|e| e.conference(name))
        .ok_or_else(|| not_found("conference"))?;
    let list = handle
        .participants()
        .await
        .map_err(|_| not_found("conference"))?;
    let view = list
        .into_iter()
        .find(|p| p.info.id == ParticipantId(id))
        .ok_or_else(|| not_found("participant"))?;
    Ok((handle, view))
}

/// `PATCH /api/conferences/{name}/participants/{id}` with `{"muted": bool,
/// "deaf": bool}` (either): applies it, returns the participant.
pub(super) async fn update(
    State(state): State<AppState>,
    Path((name, id)): Path<(String, u64)>,
    Json(change): Json<Change>,
) -> Response {
    let (handle, _) = match find(&state, &name, id).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let pid = ParticipantId(id);
    if let Some(muted) = change.muted {
        let _ = handle.send(Command::Mute(pid, muted)).await;
    }
    if let Some(deaf) = change.deaf {
        let _ = handle.send(Command::Deaf(pid, deaf)).await;
    }
    tracing::info!(conference = %name, participant = id, ?change, "participant changed by the admin API");
    match find(&state, &name, id).await {
        Ok((_, view)) => Json(Participant::from(view)).into_response(),
        Err(response) => response,
    }
}

/// `DELETE /api/conferences/{name}/participants/{id}`: removes the
/// participant; its call is hung up (BYE). 204.
pub(super) async fn remove(
    State(state): State<AppState>,
    Path((name, id)): Path<(String, u64)>,
) -> Response {
    let (handle, _) = match find(&state, &name, id).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let _ = handle.send(Command::Remove(ParticipantId(id))).await;
    tracing::info!(conference = %name, participant = id, "participant removed by the admin API");
    StatusCode::NO_CONTENT.into_response()
}

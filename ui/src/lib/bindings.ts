// Generated from src-tauri's types by `UPDATE_BINDINGS=1 cargo test --workspace --lib bindings`.
// Do not edit: a test fails when this file and the Rust types disagree.

export type UiEvent = { "type": "joined", 
/**
 * This participant's id.
 */
self_id: string, 
/**
 * Everyone else.
 */
participants: Array<UiParticipant>, 
/**
 * Whether this participant is a host.
 */
host: boolean, 
/**
 * Whether guests must knock.
 */
locked: boolean, 
/**
 * Who waits to be let in (hosts only).
 */
knocking: Array<UiKnocker>, } | { "type": "knocking" } | { "type": "knock", 
/**
 * Who.
 */
knocker: UiKnocker, } | { "type": "knock_ended", 
/**
 * Who knocked.
 */
id: string, } | { "type": "room_locked", 
/**
 * Locked now.
 */
locked: boolean, } | { "type": "relay_error", 
/**
 * Its code (docs/PROTOCOL.md section 9).
 */
code: string, 
/**
 * Its explanation.
 */
message: string, } | { "type": "participant", 
/**
 * Who, as they are now.
 */
participant: UiParticipant, } | { "type": "participant_reconnecting", 
/**
 * Who.
 */
id: string, } | { "type": "participant_left", 
/**
 * Who.
 */
id: string, 
/**
 * Why.
 */
reason: UiLeaveReason, } | { "type": "peer_connected", 
/**
 * Who.
 */
id: string, 
/**
 * How the path was made.
 */
candidate_type: string | null, } | { "type": "peer_unreachable", 
/**
 * Who.
 */
id: string, 
/**
 * The cause in English and what was tried (candidate types gathered and received).
 */
detail: string, 
/**
 * The cause for the page to word (`call.no_path.<cause>`): `nothing_gathered`,
 * `peer_sent_nothing`, `no_relay_offered`, `relay_unreachable`,
 * `relay_credentials_refused`, `relay_ports_blocked`, `blocked`; `null`: a local
 * failure, named in `detail`.
 */
cause: string | null, 
/**
 * ICE restarts go on: it may still connect.
 */
retrying: boolean, } | { "type": "levels", 
/**
 * Per participant.
 */
levels: Array<UiLevel>, 
/**
 * Who speaks most.
 */
active_speaker: string | null, } | { "type": "chat", 
/**
 * From whom.
 */
from: string, 
/**
 * The text.
 */
text: string, } | { "type": "device_switched", 
/**
 * `camera`, `microphone` or `speaker`.
 */
device: string, } | { "type": "device_failed", 
/**
 * `camera`, `microphone` or `speaker`.
 */
device: string, 
/**
 * Why.
 */
reason: string, } | { "type": "stats", 
/**
 * Per participant.
 */
peers: Array<UiPeerStats>, } | { "type": "network_changed" } | { "type": "relay_reconnecting", 
/**
 * Why it dropped.
 */
cause: string, } | { "type": "relay_resumed" } | { "type": "share_started", 
/**
 * What is shared (`screen:<n>`, `window:<id>`).
 */
source: string, } | { "type": "share_stopped", 
/**
 * Why, if it was not asked for.
 */
reason: string | null, } | { "type": "file_progress", 
/**
 * The transfer's id (the same for each peer a file goes to).
 */
id: string, 
/**
 * The other side.
 */
peer: string, 
/**
 * The file's name.
 */
name: string, 
/**
 * Bytes through.
 */
done: number, 
/**
 * Bytes in the file.
 */
size: number, 
/**
 * We send it.
 */
sending: boolean, } | { "type": "file_received", 
/**
 * From whom.
 */
from: string, 
/**
 * Its name.
 */
name: string, 
/**
 * Its size.
 */
size: number, 
/**
 * Where it was saved.
 */
path: string, } | { "type": "file_sent", 
/**
 * To whom.
 */
to: string, 
/**
 * Its name.
 */
name: string, 
/**
 * Its size.
 */
size: number, } | { "type": "file_failed", 
/**
 * The other side.
 */
peer: string, 
/**
 * The file's name.
 */
name: string, 
/**
 * We were sending it.
 */
sending: boolean, 
/**
 * Why.
 */
reason: string, } | { "type": "recording_started", 
/**
 * The file.
 */
path: string, } | { "type": "recording_stopped", 
/**
 * The file.
 */
path: string | null, 
/**
 * Why, if it was not asked for.
 */
reason: string | null, 
/**
 * How long it is, ms.
 */
duration_ms: number, 
/**
 * Its size.
 */
bytes: number, } | { "type": "myself", 
/**
 * This participant.
 */
participant: UiParticipant, } | { "type": "reaction", 
/**
 * Who.
 */
from: string, 
/**
 * One of 👍 👏 😂 ❤️ 🎉 😮.
 */
emoji: string, } | { "type": "share_policy", 
/**
 * Several at once (else one).
 */
several: boolean, } | { "type": "peer_sharing", 
/**
 * Who.
 */
id: string, 
/**
 * Sharing now.
 */
sharing: boolean, } | { "type": "ended", 
/**
 * Why, if not by leaving.
 */
reason: string | null, };

export type UiParticipant = { 
/**
 * Its id in the room (tiles and frames are keyed by it).
 */
id: string, 
/**
 * Display name.
 */
name: string, 
/**
 * Whether it is a host.
 */
host: boolean, 
/**
 * Whether its microphone is muted.
 */
muted: boolean, 
/**
 * Whether its camera is on.
 */
camera: boolean, 
/**
 * Whether its hand is raised.
 */
hand_raised: boolean, 
/**
 * Its place in the queue of raised hands (lower: raised earlier), once the relay has
 * counted it.
 */
hand_order: number | null, 
/**
 * Whether its connection to the relay dropped (it may come back).
 */
reconnecting: boolean, 
/**
 * Whether it records the call (everyone is shown it).
 */
recording: boolean, };

export type UiKnocker = { 
/**
 * Its id.
 */
id: string, 
/**
 * The name it gave.
 */
name: string, };

export type UiLevel = { 
/**
 * Who.
 */
id: string, 
/**
 * Smoothed level, dBFS (-100 for silence).
 */
dbfs: number, 
/**
 * Whether it is speaking now.
 */
speaking: boolean, };

export type UiPeerStats = { 
/**
 * Who.
 */
id: string, 
/**
 * Round-trip time, ms.
 */
rtt_ms: number | null, 
/**
 * Share of its packets lost on the way to us (0..1).
 */
receive_loss: number, 
/**
 * Share of our video lost on the way to it (0..1), as it reports.
 */
send_loss: number | null, 
/**
 * Video received, kbit/s.
 */
receive_video_kbps: number, 
/**
 * What we send it, kbit/s.
 */
send_kbps: number, 
/**
 * Its video frames decoded per second.
 */
frame_rate: number, 
/**
 * How the path was made: `host`, `srflx`, `prflx` or `relay`.
 */
candidate_type: string | null, 
/**
 * The path for the tile: `direct`, `relay_udp`, `relay_tcp`, `relay_tls` (through our
 * relay, reached over that transport) or `relay_peer` (through the other side's relay).
 */
path: string | null, 
/**
 * A one-word verdict for the tile: `good`, `fair` or `poor`.
 */
quality: Quality, };

export type Quality = "good" | "fair" | "poor";

export type UiLeaveReason = "left" | "removed" | "timeout";

export type ErrorCode = "bad_link" | "relay_unreachable" | "refused" | "relay_protocol" | "media" | "webrtc" | "not_in_call" | "in_call" | "chat" | "settings" | "room_creation" | "embedded_relay" | "share" | "file";

export type UiError = { 
/**
 * Which part failed.
 */
code: ErrorCode, 
/**
 * What happened.
 */
message: string, };

export type UiDevice = { 
/**
 * Id to choose it by (`synthetic` for the synthetic one).
 */
id: string, 
/**
 * Name to show.
 */
name: string, 
/**
 * Whether it is the system default.
 */
is_default: boolean, };

export type UiShareSource = { 
/**
 * Id to share it by: `screen:<n>` or `window:<id>`.
 */
id: string, 
/**
 * `screen` or `window`.
 */
kind: string, 
/**
 * The monitor's name or the window's title.
 */
name: string, 
/**
 * Its size now, pixels.
 */
width: number, 
/**
 * Height.
 */
height: number, 
/**
 * A picture of it (`data:image/jpeg;base64,…`, at most 320 x 180), if one could be taken.
 */
thumbnail: string | null, };

export type UiDevices = { 
/**
 * Cameras (the synthetic one last).
 */
cameras: Array<UiDevice>, 
/**
 * Microphones.
 */
microphones: Array<UiDevice>, 
/**
 * Speakers.
 */
speakers: Array<UiDevice>, };

export type FrameSocket = { 
/**
 * `ws://127.0.0.1:PORT/?token=...`
 */
url: string, };

export type UiMeeting = { 
/**
 * The host's link (keep it: it lets its holder run the meeting).
 */
host_link: string, 
/**
 * The link to send to others (`confer://`).
 */
invite_link: string, 
/**
 * The same invite as an `https://` page on the relay, which opens the app.
 */
web_link: string, 
/**
 * Whether the meeting runs on the meeting server built into this app.
 */
embedded: boolean, };

export type JoinRequest = { 
/**
 * The invite link.
 */
link: string, 
/**
 * Display name.
 */
name: string, 
/**
 * Join muted.
 */
muted: boolean, 
/**
 * Join with the camera on.
 */
camera: boolean, 
/**
 * The uplink the lobby's network check measured, kbit/s (`null`: not measured): what
 * everyone is sent together is kept within it.
 */
uplink_kbps: number | null, };

export type UiPreviewEvent = { "type": "level", 
/**
 * Which preview.
 */
generation: number, 
/**
 * Smoothed level, dBFS (-100 for silence).
 */
dbfs: number, 
/**
 * Whether it hears speech now.
 */
speaking: boolean, } | { "type": "failed", 
/**
 * Which preview.
 */
generation: number, 
/**
 * `camera` or `microphone`.
 */
device: string, 
/**
 * Why, in the system's words.
 */
message: string, };

export type UiSoundCheck = { 
/**
 * Milliseconds of the sound the device took.
 */
played_ms: number, 
/**
 * Milliseconds the sound lasts.
 */
sound_ms: number, 
/**
 * Its loudest 10 ms, dBFS.
 */
peak_dbfs: number, };

export type UiNetworkReport = { 
/**
 * The relay's round trip, milliseconds, if it answered.
 */
relay_ms: number | null, 
/**
 * Why the relay could not be checked.
 */
relay_error: string | null, 
/**
 * Each STUN and TURN URL the meeting offers.
 */
servers: Array<UiServerCheck>, 
/**
 * What it means for a call: `unreachable`, `no_servers`, `direct`, `direct_no_relay`,
 * `relayed`, `no_path` (the page words it: `lobby.verdict.<code>`).
 */
verdict: string, 
/**
 * How calls reach the meeting server's relay (`udp`, `tcp`, `tls`), if they can.
 */
relay_transport: string | null, 
/**
 * A TURN server refused the meeting server's credentials.
 */
credentials_refused: boolean, 
/**
 * A TURN server's relayed ports are closed by a firewall: it allocates, and relays nothing.
 */
relay_ports_blocked: boolean, 
/**
 * This machine's upload speed to the meeting server, kbit/s, if measured.
 */
uplink_kbps: number | null, 
/**
 * Why it was not measured.
 */
uplink_error: string | null, 
/**
 * How many people a video call can hold at each size the camera is sent in (largest
 * first), from the upload speed; empty if it was not measured.
 */
capacity: Array<UiCapacity>, };

export type UiServerCheck = { 
/**
 * The URL.
 */
url: string, 
/**
 * A TURN server (a relay for media), not STUN.
 */
turn: boolean, 
/**
 * How long it took to answer, milliseconds.
 */
ms: number | null, 
/**
 * This machine's public address (STUN) or the relayed address (TURN).
 */
address: string | null, 
/**
 * Why it did not answer (or, if `skipped`, why it was not tried).
 */
error: string | null, 
/**
 * Not tried: a kind of URL Confer does not use; not a failure.
 */
skipped: boolean, };

export type UiCapacity = { 
/**
 * Picture width.
 */
width: number, 
/**
 * Picture height.
 */
height: number, 
/**
 * The most participants, this one included (at most 25: `confer_mesh::netcheck::MAX_PREDICTED`).
 */
people: number, };

export type Settings = { 
/**
 * Display name.
 */
name: string, 
/**
 * The relay for new meetings (`wss://host:port`); empty: the one built into the app.
 */
relay_url: string, 
/**
 * Camera id, `synthetic`, or empty for none.
 */
camera: string, 
/**
 * Microphone id, `default` or `synthetic`.
 */
microphone: string, 
/**
 * Speaker id, `default` or `synthetic`.
 */
speaker: string, 
/**
 * Video sent.
 */
video_quality: VideoQuality, 
/**
 * Echo cancellation.
 */
echo_cancellation: boolean, 
/**
 * Noise suppression.
 */
noise_suppression: boolean, 
/**
 * Music mode: no processing, full band.
 */
music_mode: boolean, 
/**
 * Hide my IP address from other participants: relay candidates only, so no host or
 * server-reflexive address of this machine reaches anyone (calls need the meeting server's
 * relay).
 */
relay_only: boolean, 
/**
 * The synthetic camera's and microphone's pattern id (what tests read back).
 */
synthetic_pattern: number, 
/**
 * Recent meetings, newest first.
 */
recent: Array<RecentMeeting>, };

export type VideoQuality = "low" | "standard" | "high";

export type RecentMeeting = { 
/**
 * The link joined with.
 */
link: string, 
/**
 * The invite for others, if known (a meeting made here).
 */
invite_link: string | null, 
/**
 * When, Unix milliseconds.
 */
at_ms: number, 
/**
 * Whether it was joined as host.
 */
host: boolean, };

export type SettingsState = { 
/**
 * The settings in use.
 */
settings: Settings, 
/**
 * Why the saved ones could not be used.
 */
problem: UiError | null, };

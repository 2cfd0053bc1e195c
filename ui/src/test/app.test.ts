import { afterEach, describe, expect, it } from "vitest";
import { cleanup, fireEvent, render, screen, waitFor } from "@testing-library/svelte";
import { setBackend } from "../lib/backend";
import { setLocale } from "../lib/i18n";
import App from "../App.svelte";
import { mockBackend } from "./mock";

afterEach(cleanup);

async function toCall(mock: ReturnType<typeof mockBackend>) {
  setBackend(mock);
  setLocale("en");
  render(App);
  const link = await screen.findByTestId("link");
  await fireEvent.input(link, { target: { value: "confer://join?relay=wss://x&room=r&token=t" } });
  await fireEvent.click(screen.getByTestId("join"));
  await fireEvent.click(await screen.findByTestId("join-now"));
  await screen.findByTestId("mute");
}

describe("the app against a mock backend", () => {
  it("checks devices and network in the lobby, and frees the devices on the way back", async () => {
    const mock = mockBackend();
    setBackend(mock);
    setLocale("en");
    render(App);
    const link = "confer://join?relay=wss://x&room=r&token=t";
    await fireEvent.input(await screen.findByTestId("link"), { target: { value: link } });
    await fireEvent.click(screen.getByTestId("join"));
    // The saved devices are previewed, and the link's servers are checked without joining.
    await waitFor(() =>
      expect(mock.calls).toContainEqual(["start_preview", { camera: "synthetic", microphone: "synthetic" }]),
    );
    expect(mock.calls).toContainEqual(["network_check", link]);
    expect(mock.calls.some(([name]) => name === "join")).toBe(false);
    const network = await screen.findByTestId("net-relay");
    expect(network.textContent).toContain("Meeting server reachable (12 ms)");
    const [stun, turn] = screen.getAllByTestId("net-server");
    expect(stun?.textContent).toContain("you are 203.0.113.7:40000");
    expect(turn?.dataset.ok).toBe("false");
    expect(turn?.textContent).toContain("server silent: no answer within 5 s");
    // What it means for a call, in words.
    const verdict = screen.getByTestId("net-verdict");
    expect(verdict.dataset.verdict).toBe("direct_no_relay");
    expect(verdict.textContent).toContain("Direct connections are possible, but no relay answered");
    // And how many people the measured upload carries.
    expect(screen.getByTestId("net-capacity").textContent).toContain(
      "Your upload (3.0 Mbit/s) is enough for a video call of 4 people at 640x360",
    );

    // The meter follows the microphone; a device that fails is named.
    const meter = screen.getByTestId("mic-level");
    mock.preview({ type: "level", generation: 1, dbfs: -18, speaking: true });
    await waitFor(() => expect(meter.getAttribute("aria-valuenow")).toBe("-18"));
    expect(meter.getAttribute("aria-valuetext")).toBe("Your microphone hears you");
    mock.preview({ type: "failed", generation: 1, device: "camera", message: "the camera is busy" });
    expect((await screen.findByTestId("device-problem")).textContent).toContain("Camera: the camera is busy");

    // Choosing another microphone restarts the preview with it; the replaced preview's late
    // events do not move the meter or bring its problems back.
    await fireEvent.change(screen.getByTestId("microphone"), { target: { value: "default" } });
    await waitFor(() =>
      expect(mock.calls).toContainEqual(["start_preview", { camera: "synthetic", microphone: "default" }]),
    );
    await waitFor(() => expect(screen.queryByTestId("device-problem")).toBeNull());
    mock.preview({ type: "level", generation: 1, dbfs: -3, speaking: true });
    mock.preview({ type: "failed", generation: 1, device: "camera", message: "the camera is busy" });
    mock.preview({ type: "level", generation: 2, dbfs: -30, speaking: false });
    await waitFor(() => expect(meter.getAttribute("aria-valuenow")).toBe("-30"));
    expect(screen.queryByTestId("device-problem")).toBeNull();

    await fireEvent.click(screen.getByTestId("test-speaker"));
    expect((await screen.findByTestId("speaker-result")).textContent).toContain("Played 0.7 s");
    expect(mock.calls).toContainEqual(["test_speaker", "synthetic"]);

    await fireEvent.click(screen.getByTestId("back"));
    await waitFor(() => expect(mock.calls.map(([name]) => name)).toContain("stop_preview"));
  });


  it("joins by a pasted link with the lobby's name and devices", async () => {
    const mock = mockBackend();
    await toCall(mock);
    const join = mock.calls.find(([name]) => name === "join");
    expect(join?.[1]).toEqual({
      link: "confer://join?relay=wss://x&room=r&token=t",
      name: "Ada",
      muted: false,
      camera: true,
      uplink_kbps: 3000,
    });
    expect(screen.getByTestId("phase").textContent).toContain("Connecting to the meeting server");
  });

  it("shows a tile per participant, with state from events, and says who it is connecting to", async () => {
    const mock = mockBackend();
    await toCall(mock);
    mock.emit({
      type: "joined",
      self_id: "me",
      host: false,
      locked: false,
      knocking: [],
      participants: [
        { id: "a", name: "Alice", host: true, muted: true, camera: true, hand_raised: false, hand_order: null, reconnecting: false, recording: false },
        { id: "b", name: "Bob", host: false, muted: false, camera: true, hand_raised: false, hand_order: null, reconnecting: false, recording: false },
      ],
    });
    await waitFor(() => expect(screen.getAllByTestId("tile")).toHaveLength(3));
    const alice = screen.getAllByTestId("tile").find((t) => t.dataset.tile === "a");
    expect(alice?.querySelector("[data-testid=muted]")).not.toBeNull();
    expect(alice?.textContent).toContain("Connecting to Alice");
    mock.emit({ type: "peer_connected", id: "a", candidate_type: "host" });
    mock.emit({ type: "participant_left", id: "b", reason: "left" });
    await waitFor(() => expect(screen.getAllByTestId("tile")).toHaveLength(2));
    expect(screen.getByText("Bob left")).toBeTruthy();
  });

  it("misses no event sent before the call screen is up", async () => {
    const mock = mockBackend();
    mock.duringJoin = [
      {
        type: "joined",
        self_id: "me",
        host: false,
        locked: false,
        knocking: [],
        participants: [
          { id: "a", name: "Alice", host: true, muted: false, camera: true, hand_raised: false, hand_order: null, reconnecting: false, recording: false },
        ],
      },
    ];
    await toCall(mock);
    await waitFor(() => expect(screen.getAllByTestId("tile")).toHaveLength(2));
    expect(screen.queryByTestId("phase")).toBeNull();
  });

  it("shares a window chosen in the picker, says so with a Stop button, and shows a peer's share", async () => {
    const mock = mockBackend();
    await toCall(mock);
    mock.emit({
      type: "joined",
      self_id: "me",
      host: false,
      locked: false,
      knocking: [],
      participants: [
        { id: "a", name: "Alice", host: true, muted: false, camera: true, hand_raised: false, hand_order: null, reconnecting: false, recording: false },
      ],
    });
    await fireEvent.click(screen.getByTestId("share"));
    const picker = await screen.findByRole("dialog", { name: "Share your screen or a window" });
    const choices = await screen.findAllByTestId("share-source");
    expect(choices.map((c) => c.dataset.source)).toEqual(["screen:0", "window:42"]);
    expect(picker.textContent).toContain("Quarterly figures");
    const window42 = choices.find((c) => c.dataset.source === "window:42");
    if (!window42) throw new Error("the window is not offered");
    await fireEvent.click(window42);
    expect(screen.queryByTestId("share-picker")).toBeNull();
    expect(mock.calls.filter(([n]) => n === "share_screen")).toEqual([["share_screen", "window:42"]]);
    mock.emit({ type: "share_started", source: "window:42" });
    const bar = await screen.findByTestId("sharing-bar");
    expect(bar.textContent).toContain("You are sharing “Quarterly figures” with everyone.");
    await fireEvent.click(screen.getByTestId("stop-share"));
    expect(mock.calls.filter(([n]) => n === "share_screen").at(-1)).toEqual(["share_screen", null]);
    mock.emit({ type: "share_stopped", reason: "the shared window was closed" });
    await waitFor(() => expect(screen.queryByTestId("sharing-bar")).toBeNull());
    expect(screen.getByText("Your screen share stopped: the shared window was closed")).toBeTruthy();

    // Alice shares: her share gets a tile of its own beside the camera tiles.
    mock.emit({ type: "peer_sharing", id: "a", sharing: true });
    const shared = await waitFor(() => {
      const tile = screen.getAllByTestId("tile").find((t) => t.dataset.tile === "share:a");
      if (!tile) throw new Error("no share tile yet");
      return tile;
    });
    // (Its size needs a real layout: the desktop test measures it in WebKit.)
    expect(shared.getAttribute("aria-label")).toBe("Alice's screen");
    mock.emit({ type: "peer_sharing", id: "a", sharing: false });
    await waitFor(() => expect(screen.getAllByTestId("tile")).toHaveLength(2));
  });

  it("records when asked, shows everyone who records, and says where the recording was saved", async () => {
    const mock = mockBackend();
    await toCall(mock);
    const alice = { id: "a", name: "Alice", host: true, muted: false, camera: true, hand_raised: false, hand_order: null, reconnecting: false, recording: false };
    mock.emit({ type: "joined", self_id: "me", host: false, locked: false, knocking: [], participants: [alice] });
    // Alice records: everyone sees it, at the top and in the people list.
    mock.emit({ type: "participant", participant: { ...alice, recording: true } });
    const banner = await screen.findByTestId("recording-banner");
    expect(banner.textContent).toContain("Alice is recording this call.");
    await fireEvent.click(screen.getByTestId("record"));
    expect(mock.calls.filter(([n]) => n === "record")).toEqual([["record", true]]);
    // Until the relay has told everyone, the button says so, and a click takes it back.
    expect(screen.getByTestId("record").textContent).toContain("Starting recording…");
    await fireEvent.click(screen.getByTestId("record"));
    expect(mock.calls.filter(([n]) => n === "record").at(-1)).toEqual(["record", false]);
    await fireEvent.click(screen.getByTestId("record"));
    mock.emit({ type: "recording_started", path: "/home/me/Videos/Confer/Confer call.mkv" });
    const bar = await screen.findByTestId("recording-bar");
    expect(bar.textContent).toContain("You are recording this call: everyone is shown it.");
    await fireEvent.click(screen.getByTestId("stop-record"));
    expect(mock.calls.filter(([n]) => n === "record").at(-1)).toEqual(["record", false]);
    mock.emit({ type: "recording_stopped", path: "/home/me/Videos/Confer/Confer call.mkv", reason: null, duration_ms: 4000, bytes: 800000 });
    const saved = await screen.findByTestId("recording-saved");
    expect(saved.textContent).toContain("Recording saved: /home/me/Videos/Confer/Confer call.mkv");
    expect(screen.queryByTestId("recording-bar")).toBeNull();
    mock.emit({ type: "participant", participant: alice });
    await waitFor(() => expect(screen.queryByTestId("recording-banner")).toBeNull());
  });

  it("lets a host stop a participant's share and allow several at once", async () => {
    const mock = mockBackend();
    await toCall(mock);
    mock.emit({
      type: "joined",
      self_id: "me",
      host: true,
      locked: false,
      knocking: [],
      participants: [
        { id: "a", name: "Alice", host: false, muted: false, camera: true, hand_raised: false, hand_order: null, reconnecting: false, recording: false },
      ],
    });
    mock.emit({ type: "peer_sharing", id: "a", sharing: true });
    await fireEvent.click(screen.getByTestId("people-toggle"));
    await fireEvent.click(await screen.findByRole("button", { name: "Stop Alice's screen share" }));
    const policy = screen.getByTestId("share-policy");
    expect(policy.textContent).toContain("Let several share at once");
    await fireEvent.click(policy);
    mock.emit({ type: "share_policy", several: true });
    await waitFor(() => expect(screen.getByTestId("share-policy").textContent).toContain("One screen share at a time"));
    expect(mock.calls.filter(([n]) => n === "host_action")).toEqual([
      ["host_action", { action: "stop_share", peer: "a" }],
      ["host_action", { action: "several_shares", peer: undefined }],
    ]);
    mock.emit({ type: "peer_sharing", id: "a", sharing: false });
    await waitFor(() => expect(screen.queryByTestId("stop-peer-share")).toBeNull());
  });

  it("sends a reaction from the bar and floats it on the sender's tile, and shows others' on theirs", async () => {
    const mock = mockBackend();
    await toCall(mock);
    mock.emit({
      type: "joined",
      self_id: "me",
      host: false,
      locked: false,
      knocking: [],
      participants: [
        { id: "a", name: "Alice", host: true, muted: false, camera: true, hand_raised: false, hand_order: null, reconnecting: false, recording: false },
      ],
    });
    await fireEvent.click(screen.getByRole("button", { name: "React with 👏" }));
    expect(mock.calls.filter(([n]) => n === "react")).toEqual([["react", "👏"]]);
    const tile = (id: string) => screen.getAllByTestId("tile").find((t) => t.dataset.tile === id);
    await waitFor(() => expect(tile("self")?.querySelector("[data-testid=reaction]")?.textContent).toBe("👏"));
    mock.emit({ type: "reaction", from: "a", emoji: "❤️" });
    await waitFor(() => expect(tile("a")?.querySelector("[data-testid=reaction]")?.textContent).toBe("❤️"));
  });

  it("shows the active speaker large in speaker view, and a pinned tile large in any view", async () => {
    const mock = mockBackend();
    await toCall(mock);
    mock.emit({
      type: "joined",
      self_id: "me",
      host: false,
      locked: false,
      knocking: [],
      participants: [
        { id: "a", name: "Alice", host: true, muted: false, camera: true, hand_raised: false, hand_order: null, reconnecting: false, recording: false },
        { id: "b", name: "Bob", host: false, muted: false, camera: true, hand_raised: false, hand_order: null, reconnecting: false, recording: false },
      ],
    });
    const staged = () =>
      (document.querySelector(".stage > [data-testid=tile]") as HTMLElement | null)?.dataset.tile ?? null;
    await waitFor(() => expect(screen.getAllByTestId("tile")).toHaveLength(3));
    expect(staged()).toBeNull();
    await fireEvent.click(screen.getByTestId("layout"));
    expect(staged()).toBe("a");
    mock.emit({
      type: "levels",
      levels: [{ id: "b", dbfs: -20, speaking: true }],
      active_speaker: "b",
    });
    await waitFor(() => expect(staged()).toBe("b"));
    // Each participant has one tile, large or small.
    expect(screen.getAllByTestId("tile").map((t) => t.dataset.tile).sort()).toEqual(["a", "b", "self"]);
    // Pinning Alice puts her large, whoever speaks; back in the grid she stays pinned.
    await fireEvent.click(screen.getByRole("button", { name: "Pin Alice large" }));
    expect(staged()).toBe("a");
    await fireEvent.click(screen.getByTestId("layout"));
    expect(staged()).toBe("a");
    await fireEvent.click(screen.getByRole("button", { name: "Unpin Alice" }));
    expect(staged()).toBeNull();
  });

  it("sends a file dropped on the window and shows each transfer's progress and outcome in the chat", async () => {
    const mock = mockBackend();
    await toCall(mock);
    mock.emit({
      type: "joined",
      self_id: "me",
      host: false,
      locked: false,
      knocking: [],
      participants: [
        { id: "a", name: "Alice", host: true, muted: false, camera: true, hand_raised: false, hand_order: null, reconnecting: false, recording: false },
        { id: "b", name: "Bob", host: false, muted: false, camera: true, hand_raised: false, hand_order: null, reconnecting: false, recording: false },
      ],
    });
    await waitFor(() => expect(mock.calls.some(([n]) => n === "join")).toBe(true));
    mock.drop(["/home/ada/slides.pdf"]);
    await waitFor(() => expect(mock.calls.filter(([n]) => n === "send_file")).toEqual([["send_file", "/home/ada/slides.pdf"]]));
    const size = 20 * 1024 * 1024;
    mock.emit({ type: "file_progress", id: "f1", peer: "a", name: "slides.pdf", done: size / 4, size, sending: true });
    mock.emit({ type: "file_progress", id: "f1", peer: "b", name: "slides.pdf", done: size / 2, size, sending: true });
    const transfers = await screen.findByTestId("transfers");
    await waitFor(() => expect(transfers.textContent).toContain("Sending slides.pdf (20.0 MB) to Alice: 25%"));
    expect(transfers.textContent).toContain("Sending slides.pdf (20.0 MB) to Bob: 50%");
    mock.emit({ type: "file_sent", to: "a", name: "slides.pdf", size });
    mock.emit({ type: "file_failed", peer: "b", name: "slides.pdf", sending: true, reason: "the transfer stopped after 10485760 of 20971520 bytes (the other side left or closed it)" });
    mock.emit({ type: "file_received", from: "b", name: "notes.txt", size: 2048, path: "/home/ada/Downloads/notes.txt" });
    await waitFor(() => expect(transfers.querySelectorAll("li")).toHaveLength(3));
    const lines = [...transfers.querySelectorAll("li")].map((li) => li.textContent?.trim());
    expect(lines).toEqual([
      "Sent slides.pdf (20.0 MB) to Alice",
      "slides.pdf with Bob failed: the transfer stopped after 10485760 of 20971520 bytes (the other side left or closed it)",
      "Received notes.txt (0.0 MB) from Bob, saved as /home/ada/Downloads/notes.txt",
    ]);
  });

  it("closes the share picker with Escape without sharing", async () => {
    const mock = mockBackend();
    await toCall(mock);
    await fireEvent.click(screen.getByTestId("share"));
    const picker = await screen.findByTestId("share-picker");
    await screen.findAllByTestId("share-source");
    await fireEvent.keyDown(picker, { key: "Escape" });
    expect(screen.queryByTestId("share-picker")).toBeNull();
    expect(mock.calls.filter(([n]) => n === "share_screen")).toEqual([]);
  });

  it("mutes with the button and with M, and leaves", async () => {
    const mock = mockBackend();
    await toCall(mock);
    await fireEvent.click(screen.getByTestId("mute"));
    await fireEvent.keyDown(window, { key: "m" });
    await fireEvent.click(screen.getByTestId("leave"));
    const actions = mock.calls.filter(([n]) => n === "set_muted" || n === "leave");
    expect(actions).toEqual([
      ["set_muted", true],
      ["set_muted", false],
      ["leave", undefined],
    ]);
    mock.emit({ type: "ended", reason: null });
    expect(await screen.findByTestId("ended")).toBeTruthy();
  });

  it("opens the lobby of a link clicked while the app runs", async () => {
    const mock = mockBackend();
    setBackend(mock);
    setLocale("en");
    render(App);
    await screen.findByTestId("link");
    mock.invite("confer://join?relay=wss://x&room=r1&token=t1");
    await waitFor(() => expect(mock.calls).toContainEqual(["network_check", "confer://join?relay=wss://x&room=r1&token=t1"]));
    // Another link while in the first one's lobby: that meeting's lobby, with its own check.
    mock.invite("confer://join?relay=wss://y&room=r2&token=t2");
    await waitFor(() => expect(mock.calls).toContainEqual(["network_check", "confer://join?relay=wss://y&room=r2&token=t2"]));
    expect((await screen.findByTestId("lobby-server")).textContent).toContain("wss://y");
    await fireEvent.click(await screen.findByTestId("join-now"));
    await screen.findByTestId("mute");
    expect(mock.calls.find(([n]) => n === "join")?.[1]).toMatchObject({
      link: "confer://join?relay=wss://y&room=r2&token=t2",
    });
  });

  it("names the part that failed when the join is refused", async () => {
    const mock = mockBackend();
    mock.failJoinWith = { code: "relay_unreachable", message: "wss://x: connection refused" };
    setBackend(mock);
    setLocale("en");
    render(App);
    await fireEvent.input(await screen.findByTestId("link"), { target: { value: "confer://join?x" } });
    await fireEvent.click(screen.getByTestId("join"));
    await fireEvent.click(await screen.findByTestId("join-now"));
    const error = await screen.findByTestId("error");
    expect(error.dataset.code).toBe("relay_unreachable");
    expect(error.textContent).toContain("Can't reach the meeting server: wss://x: connection refused");
    // The shell closed the devices for the call; the lobby shows them again.
    await waitFor(() => expect(mock.calls.filter(([n]) => n === "start_preview")).toHaveLength(2));
  });
});

describe("the settings screen", () => {
  it("saves what was changed and keeps the rest", async () => {
    const mock = mockBackend();
    setBackend(mock);
    setLocale("en");
    render(App);
    await fireEvent.click(await screen.findByText("Settings"));
    await fireEvent.click(await screen.findByLabelText(/Music mode/));
    await fireEvent.click(screen.getByLabelText(/Hide my IP address/));
    await fireEvent.click(screen.getByLabelText(/Low \(320/));
    const microphone = await screen.findByTestId("microphone");
    await waitFor(() => expect(microphone.querySelectorAll("option")).toHaveLength(2));
    await fireEvent.change(microphone, { target: { value: "default" } });
    await fireEvent.click(screen.getByText("Save"));
    await screen.findByText("Saved");
    const saved = mock.calls.find(([n]) => n === "save_settings")?.[1];
    expect(saved).toMatchObject({
      name: "Ada",
      music_mode: true,
      relay_only: true,
      video_quality: "low",
      microphone: "default",
      camera: "synthetic",
    });
  });
});

// The lobby's call capacity: what the measured upload allows, in words.
import type { UiNetworkReport } from "./bindings";
import { t } from "./i18n";

/** The most people a prediction names (the shell caps at this; shown as "25+"). */
export const MAX_PREDICTED = 25;

/**
 * One sentence on how many people a video call can hold with this upload, largest picture
 * first; `null` when the upload was not measured (the lobby says why instead).
 */
export function capacityText(network: UiNetworkReport): string | null {
  if (network.uplink_kbps === null || network.capacity.length === 0) return null;
  const mbps = (network.uplink_kbps / 1000).toFixed(1);
  const people = (n: number) => (n >= MAX_PREDICTED ? `${MAX_PREDICTED}+` : String(n));
  const at = (c: UiNetworkReport["capacity"][number]) =>
    t("lobby.capacity_at", { people: people(c.people), size: `${c.width}x${c.height}` });
  const fits = network.capacity.filter((c) => c.people >= 2);
  const top = network.capacity[0];
  if (fits.length === 0) return t("lobby.capacity_audio", { mbps });
  if (top !== undefined && top.people >= 2) {
    return t("lobby.capacity", { mbps, top: at(top), rest: network.capacity.slice(1).map(at).join(", ") });
  }
  return t("lobby.capacity_small", { mbps, size: `${top?.width}x${top?.height}`, rest: fits.map(at).join(", ") });
}

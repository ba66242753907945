/** HF v4.40 `SiglipVisionConfig` (models/siglip/configuration_siglip.py); parsed by the shared reader in ../clip/config. */
import path from 'node:path';
import { ConfigReader, readJson } from '../../io/config';
import { VisionTowerConfig, parseVisionTowerConfig } from '../clip/config';

export type { VisionTowerConfig };

/** `SiglipVisionConfig.from_pretrained(dir)`: reads `<dir>/config.json` (vision-only or full SiglipConfig). */
export function loadSiglipVisionConfig(dir: string, unused?: (keys: string[]) => void): VisionTowerConfig {
  const file = path.join(dir, 'config.json');
  return parseVisionTowerConfig(new ConfigReader(readJson(file), file), 'siglip', unused);
}

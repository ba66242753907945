/** Shared media types: decoded images and frames are 8-bit RGB, row-major, channels last. */

/** An 8-bit RGB image: `data[(y * width + x) * 3 + c]`. */
export interface RgbImage {
  width: number;
  height: number;
  /** length width * height * 3 */
  data: Uint8Array;
}

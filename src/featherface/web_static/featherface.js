// FeatherFace in the browser: pre-processing identical to featherface.preprocessing (Python) and the ONNX Runtime Web call.
// No DOM beyond canvases; embed it in another app with  import { FeatherFaceDetector } from "./featherface.js".
//
// Model: `featherface export CHECKPOINT -o model.onnx --with-postprocess`
//   inputs  input [1, 3, H, W] float32 = (pixels in the model's colour order - mean) / std (its "preprocessing"
//           metadata; default BGR - (104, 117, 123)), score_threshold [1] float32, iou_threshold [1] float32
//   outputs boxes [N, 4] (x1, y1, x2, y2, network-input pixels), scores [N], landmarks [N, 10], batch_index [N] int64

/** featherface.preprocessing.DEFAULT_PREPROCESSING; a model's own record comes from its ONNX metadata. */
export const DEFAULT_PREPROCESSING = Object.freeze({ color_order: "BGR", mean: [104, 117, 123], std: [1, 1, 1] });
export const MEAN_BGR = DEFAULT_PREPROCESSING.mean;
export const LANDMARK_NAMES = ["left_eye", "right_eye", "nose", "mouth_left", "mouth_right"];
export const DEFAULT_MAX_SIDE = 2560; // featherface.api.ResizePolicy.max_side
export const MAX_PIXELS = 50e6; // refuse larger images before decoding them (a 50 MP RGBA bitmap is 200 MB)

/** Python's round(): halves go to the even neighbour (cv2 sizes in featherface.api use it). */
export function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** featherface.api.ResizePolicy.scale_for: longestSide null keeps the original size; maxSide caps it. */
export function scaleFor(height, width, { longestSide = null, maxSide = DEFAULT_MAX_SIDE } = {}) {
  const longest = Math.max(height, width);
  let scale = longestSide == null ? 1.0 : longestSide / longest;
  if (maxSide != null && longest * scale > maxSide) scale = maxSide / longest;
  return scale;
}

/** Network input size for an image of width x height at `scale` (featherface.preprocessing.resized_size). */
export function inputSize(width, height, scale) {
  if (scale === 1.0) return [width, height];
  return [Math.max(1, roundHalfEven(width * scale)), Math.max(1, roundHalfEven(height * scale))];
}

/** A "preprocessing" metadata record (JSON string or object, featherface.preprocessing.Preprocessing.to_dict). */
export function parsePreprocessing(value) {
  const v = typeof value === "string" ? JSON.parse(value) : value ?? {};
  return {
    color_order: String(v.color_order ?? v.color ?? DEFAULT_PREPROCESSING.color_order).toUpperCase(),
    mean: (v.mean ?? DEFAULT_PREPROCESSING.mean).map(Number),
    std: (v.std ?? DEFAULT_PREPROCESSING.std).map(Number),
  };
}

/** RGBA ImageData -> Float32Array [3, H, W] in the model's colour order, minus the mean, divided by std
 * (featherface.preprocessing.preprocess). */
export function preprocess(imageData, preprocessing = DEFAULT_PREPROCESSING) {
  const { data, width, height } = imageData;
  const { mean, std } = preprocessing;
  const src = preprocessing.color_order === "RGB" ? [0, 1, 2] : [2, 1, 0]; // RGBA offset of each input channel
  const plane = width * height;
  const out = new Float32Array(3 * plane);
  for (let c = 0; c < 3; c++) {
    const o = c * plane, k = src[c], m = mean[c], s = std[c];
    if (s === 1) for (let i = k, p = 0; p < plane; i += 4, p++) out[o + p] = data[i] - m;
    else for (let i = k, p = 0; p < plane; i += 4, p++) out[o + p] = (data[i] - m) / s;
  }
  return out;
}

/**
 * Draw `source` (ImageBitmap, HTMLVideoElement, canvas, ...) at the network size and read its pixels.
 * No colour management and no smoothing when the size is unchanged, so a still photo gives the bytes that
 * OpenCV decodes; a resize uses the browser's high-quality filter (close to, not bit-identical with,
 * cv2.INTER_AREA / INTER_LINEAR).
 */
export function pixelsAt(source, srcWidth, srcHeight, scale, canvas = null) {
  const [w, h] = inputSize(srcWidth, srcHeight, scale);
  const c = canvas ?? (typeof OffscreenCanvas !== "undefined" ? new OffscreenCanvas(w, h) : document.createElement("canvas"));
  if (c.width !== w) c.width = w;
  if (c.height !== h) c.height = h;
  const ctx = c.getContext("2d", { willReadFrequently: true, colorSpace: "srgb" });
  ctx.imageSmoothingEnabled = scale !== 1.0;
  ctx.imageSmoothingQuality = "high";
  ctx.clearRect(0, 0, w, h);
  ctx.drawImage(source, 0, 0, w, h);
  return ctx.getImageData(0, 0, w, h);
}

/**
 * Decode a user's File/Blob like OpenCV's imdecode(IMREAD_UNCHANGED): no EXIF rotation, no colour-profile
 * conversion, no premultiplied alpha. Rejects non-images and images over `maxPixels` with a readable Error.
 */
export async function decodeImage(blob, { maxPixels = MAX_PIXELS } = {}) {
  if (!blob || blob.size === 0) throw new Error("The file is empty.");
  const url = URL.createObjectURL(blob);
  try {
    const img = new Image();
    img.decoding = "async";
    await new Promise((resolve, reject) => {
      img.onload = resolve;
      img.onerror = () => reject(new Error(`"${blob.name ?? "file"}" is not an image this browser can decode.`));
      img.src = url;
    }); // the load event fires once the header is read; pixels are decoded later
    const { naturalWidth: w, naturalHeight: h } = img;
    if (!w || !h) throw new Error(`"${blob.name ?? "file"}" has no pixels.`);
    if (w * h > maxPixels) {
      throw new Error(`The image is ${w}\u00d7${h} (${(w * h / 1e6).toFixed(0)} MP), larger than this page's limit ` +
        `of ${(maxPixels / 1e6).toFixed(0)} MP. Downscale it first (the Python CLI handles any size).`);
    }
    try {
      return await createImageBitmap(blob, { imageOrientation: "none", colorSpaceConversion: "none", premultiplyAlpha: "none" });
    } catch (err) {
      throw new Error(`Could not decode "${blob.name ?? "file"}" (${w}\u00d7${h}): ${err.message || err}`);
    }
  } finally {
    URL.revokeObjectURL(url);
  }
}

export class FeatherFaceDetector {
  /**
   * @param ort           the onnxruntime-web module (import * as ort from "onnxruntime-web")
   * @param modelUrl      URL of an ONNX export made with --with-postprocess
   * @param sessionOptions passed to ort.InferenceSession.create (default: the WASM backend)
   * @param preprocessing the model's "preprocessing" metadata (string or object; default: DEFAULT_PREPROCESSING)
   */
  static async create(ort, modelUrl, { sessionOptions = {}, preprocessing = null } = {}) {
    const session = await ort.InferenceSession.create(modelUrl, { executionProviders: ["wasm"], graphOptimizationLevel: "all", ...sessionOptions });
    const need = ["input", "score_threshold", "iou_threshold"];
    const missing = need.filter((n) => !session.inputNames.includes(n));
    if (missing.length || !session.outputNames.includes("scores")) {
      throw new Error(`The model is not a FeatherFace export with in-graph post-processing (inputs: ${session.inputNames.join(", ")}). ` +
        "Re-export it with `featherface export CHECKPOINT -o model.onnx --with-postprocess`.");
    }
    return new FeatherFaceDetector(ort, session, parsePreprocessing(preprocessing));
  }

  constructor(ort, session, preprocessing = DEFAULT_PREPROCESSING) {
    this.ort = ort;
    this.session = session;
    this.preprocessing = preprocessing;
    this.canvas = null;
  }

  /**
   * Faces in `source` (ImageBitmap, video, canvas), in its own pixels.
   * @returns {{faces: {box:number[], score:number, landmarks:number[][]}[], ms:number, inferMs:number, scale:number, inputWidth:number, inputHeight:number}}
   */
  async detect(source, width, height, { scoreThreshold = 0.5, nmsThreshold = 0.4, longestSide = null, maxSide = DEFAULT_MAX_SIDE } = {}) {
    const t0 = performance.now();
    const scale = scaleFor(height, width, { longestSide, maxSide });
    if (!this.canvas) this.canvas = typeof OffscreenCanvas !== "undefined" ? new OffscreenCanvas(1, 1) : document.createElement("canvas");
    const pixels = pixelsAt(source, width, height, scale, this.canvas);
    const ort = this.ort;
    const feeds = {
      input: new ort.Tensor("float32", preprocess(pixels, this.preprocessing), [1, 3, pixels.height, pixels.width]),
      score_threshold: new ort.Tensor("float32", new Float32Array([scoreThreshold]), [1]),
      iou_threshold: new ort.Tensor("float32", new Float32Array([nmsThreshold]), [1]),
    };
    const t1 = performance.now();
    const out = await this.session.run(feeds);
    const t2 = performance.now();
    const boxes = out.boxes.data, scores = out.scores.data, lms = out.landmarks.data;
    const faces = [];
    for (let i = 0; i < scores.length; i++) {
      const b = Array.from(boxes.subarray(4 * i, 4 * i + 4), (v) => v / scale);
      const l = [];
      for (let k = 0; k < 5; k++) l.push([lms[10 * i + 2 * k] / scale, lms[10 * i + 2 * k + 1] / scale]);
      faces.push({ box: b, score: scores[i], landmarks: l });
    }
    for (const t of Object.values(out)) t.dispose?.();
    return { faces, ms: performance.now() - t0, inferMs: t2 - t1, scale, inputWidth: pixels.width, inputHeight: pixels.height };
  }
}

// The form's shrink of a large photo before it is sent (slow mobile links), made so that the
// server answers as it would for the original file: one answer per photo, form or API.
//
// The server decodes an upload no larger than it needs (classifier/images.py): a JPEG at
// 1/2, 1/4 or 1/8 scale inside libjpeg, then any image shrunk by the largest whole factor
// that keeps its shorter side at least data-decode-side px (Image.reduce, a box average),
// then EXIF orientation. Here the same factor, the same blocks (counted from the corner the
// file stores first) and the same box average are applied to the browser's decode, and the
// result is sent lossless (WebP, or PNG where the browser cannot write WebP) at exactly
// that size, so the server's own reduction has nothing left to do. A file the browser cannot
// decode (HEIC outside Safari), or that would not get smaller, goes as it is.
(function () {
  "use strict";
  const STRIP_PIXELS = 1 << 22;  // rows read back from the canvas at a time (16 MB of RGBA)

  // classifier/images.py: _draft (JPEG only, when the shorter side is at least twice
  // `side`) then _reduce. Returns the whole factor each output pixel averages.
  function decodeFactor(width, height, jpeg, side) {
    let scale = 1;
    if (jpeg && Math.min(width, height) >= 2 * side) {
      const most = Math.min(Math.floor(width / side), Math.floor(height / side));
      scale = [8, 4, 2, 1].find((s) => most >= s);
    }
    const shorter = Math.min(Math.ceil(width / scale), Math.ceil(height / scale));
    return scale * Math.max(1, Math.floor(shorter / side));
  }

  // A JPEG's EXIF orientation (1 when it has none); null when the bytes are not a JPEG.
  function jpegOrientation(view) {
    if (view.byteLength < 4 || view.getUint16(0) !== 0xFFD8) return null;
    try {
      let offset = 2;
      while (offset + 10 <= view.byteLength) {
        const marker = view.getUint16(offset);
        if ((marker & 0xFF00) !== 0xFF00 || marker === 0xFFDA) break;  // start of scan
        if (marker === 0xFFE1 && view.getUint32(offset + 4) === 0x45786966) {  // "Exif"
          const tiff = offset + 10;
          const little = view.getUint16(tiff) === 0x4949;
          const ifd = tiff + view.getUint32(tiff + 4, little);
          for (let i = 0, n = view.getUint16(ifd, little); i < n; i++) {
            const entry = ifd + 2 + i * 12;
            if (view.getUint16(entry, little) === 0x0112) return view.getUint16(entry + 8, little);
          }
          return 1;
        }
        offset += 2 + view.getUint16(offset + 2);
      }
    } catch (e) { /* a cut or malformed header: no orientation */ }
    return 1;
  }

  // For one axis of `length` px: the output index of each pixel, blocks of `factor` counted
  // from the start, or from the end when the file stores this axis the other way round.
  function blocks(length, factor, fromEnd) {
    const shift = fromEnd ? (factor - length % factor) % factor : 0;
    const index = new Int32Array(length);
    const count = new Float64Array(Math.ceil(length / factor));
    for (let i = 0; i < length; i++) {
      index[i] = Math.floor((i + shift) / factor);
      count[index[i]] += 1;
    }
    return { index, count };
  }

  // The upright bitmap averaged over factor x factor blocks, as RGBA ImageData; transparency
  // on white, as on the server.
  function boxAverage(bitmap, factor, orientation) {
    const w = bitmap.width, h = bitmap.height;
    const xs = blocks(w, factor, [2, 3, 6, 7].includes(orientation));
    const ys = blocks(h, factor, [3, 4, 7, 8].includes(orientation));
    const outW = xs.count.length, outH = ys.count.length;
    const sums = new Float64Array(outW * outH * 3);
    const rows = Math.max(1, Math.min(h, Math.floor(STRIP_PIXELS / w)));
    const strip = document.createElement("canvas");
    strip.width = w;
    strip.height = rows;
    const ctx = strip.getContext("2d", { willReadFrequently: true });
    for (let top = 0; top < h; top += rows) {
      const n = Math.min(rows, h - top);
      ctx.fillStyle = "#fff";
      ctx.fillRect(0, 0, w, n);
      ctx.drawImage(bitmap, 0, top, w, n, 0, 0, w, n);
      const px = ctx.getImageData(0, 0, w, n).data;
      for (let y = 0; y < n; y++) {
        const row = ys.index[top + y] * outW;
        for (let x = 0, p = y * w * 4; x < w; x++, p += 4) {
          const o = (row + xs.index[x]) * 3;
          sums[o] += px[p];
          sums[o + 1] += px[p + 1];
          sums[o + 2] += px[p + 2];
        }
      }
    }
    const out = new ImageData(outW, outH);
    for (let y = 0; y < outH; y++) {
      for (let x = 0; x < outW; x++) {
        const i = y * outW + x, area = ys.count[y] * xs.count[x];
        for (let c = 0; c < 3; c++) out.data[i * 4 + c] = Math.round(sums[i * 3 + c] / area);
        out.data[i * 4 + 3] = 255;
      }
    }
    return out;
  }

  // `file` as the form should send it: a lossless image of the size the server would decode
  // it to, or `file` itself. A returned Blob carries a `note` for the status line.
  async function shrinkForUpload(file, side) {
    if (!side || !window.createImageBitmap) return file;
    const head = new DataView(await file.slice(0, 1 << 16).arrayBuffer());
    const orientation = jpegOrientation(head);
    let bitmap;
    try { bitmap = await createImageBitmap(file); } catch (e) { return file; }
    const factor = decodeFactor(bitmap.width, bitmap.height, orientation !== null, side);
    if (factor < 2) { bitmap.close(); return file; }
    const pixels = boxAverage(bitmap, factor, orientation || 1);
    bitmap.close();
    const canvas = document.createElement("canvas");
    canvas.width = pixels.width;
    canvas.height = pixels.height;
    canvas.getContext("2d").putImageData(pixels, 0, 0);
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/webp", 1));
    if (!blob || blob.size >= file.size) return file;
    blob.note = "sent as " + canvas.width + "×" + canvas.height + " (" + Math.ceil(blob.size / 1024) +
      " KB instead of " + (file.size / 1048576).toFixed(1) + " MB)";
    return blob;
  }

  window.shrinkForUpload = shrinkForUpload;
})();

//! Received CMS structures decoded so that the bytes that were signed stay available.
//!
//! `der` 0.7 sorts a SET OF while decoding; re-encoding a received SET OF attributes (or a
//! received certificate) can therefore change its bytes and break a valid signature. These
//! mirror types, decoded with the `der` derive macros, keep the raw value bytes of the fields
//! whose exact encoding was signed.

use cms::{
    content_info::CmsVersion,
    signed_data::{EncapsulatedContentInfo, SignerIdentifier},
};
use der::{
    DecodeValue, EncodeValue, FixedTag, Header, Length, Reader, Sequence, Tag, Writer,
    asn1::{AnyRef, BitStringRef, OctetStringRef},
};
use spki::AlgorithmIdentifierOwned;

/// The value bytes of a SET (or of an IMPLICIT-tagged SET), undecoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RawSet<'a>(pub &'a [u8]);

impl<'a> DecodeValue<'a> for RawSet<'a> {
    fn decode_value<R: Reader<'a>>(reader: &mut R, header: Header) -> der::Result<Self> {
        Ok(Self(reader.read_slice(header.length)?))
    }
}

impl EncodeValue for RawSet<'_> {
    fn value_len(&self) -> der::Result<Length> {
        Length::try_from(self.0.len())
    }

    fn encode_value(&self, writer: &mut impl Writer) -> der::Result<()> {
        writer.write(self.0)
    }
}

impl FixedTag for RawSet<'_> {
    const TAG: Tag = Tag::Set;
}

impl<'a> RawSet<'a> {
    /// The elements of the SET, each as its complete TLV bytes, in the order received.
    pub(crate) fn elements(&self) -> der::Result<Vec<&'a [u8]>> {
        let mut reader = der::SliceReader::new(self.0)?;
        let mut out = Vec::new();
        while !reader.is_finished() {
            out.push(reader.tlv_bytes()?);
        }
        Ok(out)
    }

    /// The DER encoding of this value under the universal SET tag: what a CMS signature over
    /// signed attributes covers (RFC 5652 §5.4).
    pub(crate) fn as_der_set(&self) -> der::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.0.len() + 6);
        let header = Header::new(Tag::Set, Length::try_from(self.0.len())?)?;
        der::Encode::encode_to_vec(&header, &mut out)?;
        out.extend_from_slice(self.0);
        Ok(out)
    }
}

/// `SignedData` (RFC 5652 §5.1) with certificates, CRLs and signer infos left raw.
#[derive(Clone, Debug, Sequence)]
pub(crate) struct RawSignedData<'a> {
    pub version: CmsVersion,
    pub digest_algorithms: RawSet<'a>,
    pub encap_content_info: EncapsulatedContentInfo,
    #[asn1(
        context_specific = "0",
        tag_mode = "IMPLICIT",
        constructed = "true",
        optional = "true"
    )]
    pub certificates: Option<RawSet<'a>>,
    #[asn1(
        context_specific = "1",
        tag_mode = "IMPLICIT",
        constructed = "true",
        optional = "true"
    )]
    pub crls: Option<RawSet<'a>>,
    pub signer_infos: RawSet<'a>,
}

/// `SignerInfo` (RFC 5652 §5.3) with the signed attributes left as received.
#[derive(Clone, Debug, Sequence)]
pub(crate) struct RawSignerInfo<'a> {
    pub version: CmsVersion,
    pub sid: SignerIdentifier,
    pub digest_alg: AlgorithmIdentifierOwned,
    #[asn1(
        context_specific = "0",
        tag_mode = "IMPLICIT",
        constructed = "true",
        optional = "true"
    )]
    pub signed_attrs: Option<RawSet<'a>>,
    pub signature_algorithm: AlgorithmIdentifierOwned,
    pub signature: OctetStringRef<'a>,
    #[asn1(
        context_specific = "1",
        tag_mode = "IMPLICIT",
        constructed = "true",
        optional = "true"
    )]
    pub unsigned_attrs: Option<RawSet<'a>>,
}

/// `Certificate` (RFC 5280 §4.1) with the signed `tbsCertificate` left as received.
#[derive(Clone, Debug, Sequence)]
pub(crate) struct RawCertificate<'a> {
    pub tbs_certificate: AnyRef<'a>,
    pub signature_algorithm: AlgorithmIdentifierOwned,
    pub signature: BitStringRef<'a>,
}
